
    int fd = open(file, O_CREAT | O_WRONLY | O_TRUNC, 0666);
    if (fd == -1) {
        return 1;
    }
    write(fd, config, 16);
    close(fd);
    return 0;
}
