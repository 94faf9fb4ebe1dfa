
    if not img_name:
        return "missing img_name", 400
    return send_from_directory('/images', img_name)
