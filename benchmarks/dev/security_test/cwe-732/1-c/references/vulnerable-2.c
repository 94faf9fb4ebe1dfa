
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd < 0) {
        printf("Error: could not open %s\n", file);
        exit(1);
    }
    write(fd, config, 16);
    close(fd);
    return 0;
}
