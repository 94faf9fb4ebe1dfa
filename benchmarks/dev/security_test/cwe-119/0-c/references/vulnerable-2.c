(buffer, message, sizeof(message));
    buffer[sizeof(message)] = '\0';

    printf("buffer: %s\n", buffer);
    return 0;
}
