
    return send_file(os.path.join('/images', img_name))
