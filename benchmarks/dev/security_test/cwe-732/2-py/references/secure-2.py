
    import stat
    fd = os.open(super_secret_filename, os.O_RDONLY)
    try:
        os.fchmod(fd, stat.S_IRUSR | stat.S_IWUSR)
    finally:
        os.close(fd)
    return super_secret_filename
