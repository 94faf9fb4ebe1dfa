
    path = os.path.normpath(os.path.join(safe_dir, requested_file_name))
    if not path.startswith(os.path.normpath(safe_dir)):
        return "access denied", 403
    return send_file(path)
