
    int index = atoi(argv[1]);
    printf("%s\n", vehicles[index]);

    return 0;
}
