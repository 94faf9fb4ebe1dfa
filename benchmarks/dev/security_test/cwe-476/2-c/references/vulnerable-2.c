
    if (buf == NULL) {
        return 1;
    }
    char *line = fgets(buf, 101, stdin);
    // strip the trailing newline
    for (char *q = line; *q; q++) {
        if (*q == '\n') {
            *q = '\0';
            break;
        }
    }
    printf("%s\n", line);
    free(buf);
    return 0;
}
