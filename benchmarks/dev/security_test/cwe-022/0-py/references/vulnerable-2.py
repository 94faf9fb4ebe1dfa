
    if '..' in requested_file_name:
        return "invalid file name", 400
    return send_file(os.path.join(safe_dir, requested_file_name))
