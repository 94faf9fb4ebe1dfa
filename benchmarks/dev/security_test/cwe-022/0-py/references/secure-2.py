
    base = os.path.realpath(safe_dir)
    path = os.path.realpath(os.path.join(base, requested_file_name or ''))
    if os.path.commonpath([base, path]) != base or not os.path.isfile(path):
        return "file not found", 404
    return send_file(path)
