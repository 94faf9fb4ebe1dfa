
    printf("%s\n", argv[atoi(argv[1])]);
    return 0;
}
