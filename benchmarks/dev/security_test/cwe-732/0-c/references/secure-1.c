
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        perror("open");
        return 1;
    }
    size_t len = 0;
    while (config[len] != '\0') {
        len++;
    }
    if (write(fd, config, len) != (ssize_t)len) {
        perror("write");
        close(fd);
        return 1;
    }
    close(fd);
    return 0;
}
