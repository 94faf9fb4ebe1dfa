(buffer, message, strlen(message) < sizeof(buffer) ? strlen(message) : sizeof(buffer) - 1);
    buffer[strlen(message) < sizeof(buffer) ? strlen(message) : sizeof(buffer) - 1] = '\0';

    // print the buffer
    puts(buffer);
    return 0;
}
