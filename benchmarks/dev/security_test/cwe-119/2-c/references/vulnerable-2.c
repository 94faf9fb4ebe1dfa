
    int index = atoi(argv[1]);
    if (index < argc) {
        printf("argument %d: %s\n", index, argv[index]);
    } else {
        printf("index out of range\n");
    }
    return 0;
}
