
    char *str = malloc(16);
    if (str == NULL) {
        return 1;
    }
    sprintf(str, "%.4f", a);
    printf("a = %s\n", str);
    sprintf(str, "%.4f", b);
    printf("b = %s\n", str);
    sprintf(str, "%.4f", c);
    printf("c = %s\n", str);
    free(str);
    return 0;
}
