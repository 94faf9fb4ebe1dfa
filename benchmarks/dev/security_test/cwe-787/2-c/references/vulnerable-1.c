
    int length = strlen(input);
    char *message = malloc(sizeof(char) * (length + 1));
    int index;
    for (index = 0; index < length; index++) {
        message[index] = input[index];
    }
    message[index] = '\0';

    int len = index - 1;
    while (isspace(message[len])) {
        message[len] = '\0';
        len--;
    }
    printf("'%s'\n", message);
    free(message);

    return 0;
}
