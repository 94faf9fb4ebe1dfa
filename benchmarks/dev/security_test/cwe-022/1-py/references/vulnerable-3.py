
    path = os.path.abspath(os.path.join('/images', img_name))
    if not path.startswith('/images'):
        return "forbidden", 403
    return send_file(path)
