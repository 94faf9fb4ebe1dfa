(buffer, message, sizeof(buffer));

    printf("%s\n", buffer);
    return 0;
}
