
    size_t len = strlen(input);
    char *trimmed = malloc(len + 1);
    if (trimmed == NULL) {
        printf("Out of memory\n");
        exit(1);
    }
    memcpy(trimmed, input, len + 1);
    while (len > 0 && isspace((unsigned char)trimmed[len - 1])) {
        trimmed[--len] = '\0';
    }
    printf("'%s'\n", trimmed);
    free(trimmed);

    return 0;
}
