
    os.chmod(super_secret_filename, 0o644)
