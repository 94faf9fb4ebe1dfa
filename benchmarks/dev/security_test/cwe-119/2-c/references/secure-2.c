
    char *end;
    long index;

    if (argc <= 1) {
        fprintf(stderr, "missing index\n");
        exit(1);
    }
    index = strtol(argv[1], &end, 10);
    if (end == argv[1] || *end != '\0' || index < 1 || index > argc - 1) {
        fprintf(stderr, "bad index: %s\n", argv[1]);
        exit(1);
    }
    puts(argv[index]);
    return 0;
}
