
    char result[256];
    strcpy(result, input);
    int i = strlen(result) - 1;
    while (i >= 0 && isspace(result[i])) {
        result[i] = '\0';
        i--;
    }
    printf("'%s'\n", result);

    return 0;
}
