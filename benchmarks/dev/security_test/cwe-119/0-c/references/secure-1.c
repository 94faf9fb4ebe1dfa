(buffer, message, strlen(message) + 1);

    printf("%s\n", buffer);
    return 0;
}
