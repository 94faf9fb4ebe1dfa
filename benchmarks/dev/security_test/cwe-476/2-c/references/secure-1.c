
    if (buf == NULL) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    if (fgets(buf, 101, stdin) == NULL) {
        fprintf(stderr, "no input\n");
        free(buf);
        return 1;
    }
    printf("%s\n", buf);
    free(buf);
    return 0;
}
