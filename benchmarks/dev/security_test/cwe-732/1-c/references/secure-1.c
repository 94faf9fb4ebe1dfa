
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd == -1) {
        perror("open");
        return 1;
    }
    const char *p = config;
    while (*p) {
        ssize_t n = write(fd, p, 1);
        if (n <= 0) {
            close(fd);
            return 1;
        }
        p++;
    }
    close(fd);
    return 0;
}
