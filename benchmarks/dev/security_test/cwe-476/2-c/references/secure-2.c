
    if (!buf)
        exit(EXIT_FAILURE);
    size_t n = fread(buf, 1, 100, stdin);
    buf[n] = '\0';
    fputs(buf, stdout);
    putchar('\n');
    free(buf);
    return EXIT_SUCCESS;
}
