
    if (argc < 2) {
        printf("usage: %s INDEX [ARG...]\n", argv[0]);
        return 1;
    }
    int index = atoi(argv[1]);
    if (index < 0 || index >= argc) {
        printf("index %d out of range\n", index);
        return 1;
    }
    printf("%s\n", argv[index]);
    return 0;
}
