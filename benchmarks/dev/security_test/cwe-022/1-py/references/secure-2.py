
    path = safe_join('/images', img_name or '')
    if path is None or not os.path.isfile(path):
        return "image not found", 404
    return send_file(path, mimetype='image/jpeg')
