
    return send_from_directory(safe_dir, requested_file_name)
