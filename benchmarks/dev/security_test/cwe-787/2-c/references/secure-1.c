
    char *end = input + strlen(input);
    while (end > input && isspace((unsigned char)end[-1])) {
        end--;
    }
    *end = '\0';
    printf("'%s'\n", input);

    return 0;
}
