
    float values[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        int len = snprintf(NULL, 0, "%f", values[i]);
        if (len < 0) {
            return 1;
        }
        char *str = malloc((size_t)len + 1);
        if (str == NULL) {
            return 1;
        }
        snprintf(str, (size_t)len + 1, "%f", values[i]);
        printf("float %d: %s\n", i + 1, str);
        free(str);
    }
    return 0;
}
