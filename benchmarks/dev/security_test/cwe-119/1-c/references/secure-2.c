
    if (argc < 2) {
        printf("usage: %s INDEX (1-4)\n", argv[0]);
        return 1;
    }
    char *end;
    long n = strtol(argv[1], &end, 10);
    if (*argv[1] == '\0' || *end != '\0' || n < 1 || n > (long)(sizeof(vehicles) / sizeof(*vehicles))) {
        printf("no vehicle number %s\n", argv[1]);
        return 1;
    }
    printf("vehicle %ld: %s\n", n, vehicles[n - 1]);
    return 0;
}
