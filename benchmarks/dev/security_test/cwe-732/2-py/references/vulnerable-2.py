
    os.chmod(super_secret_filename, 0o755)
    return super_secret_filename
