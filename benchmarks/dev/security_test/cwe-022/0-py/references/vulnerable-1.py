
    return send_file(safe_dir + requested_file_name)
