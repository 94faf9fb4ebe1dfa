
    img_name = img_name.replace('../', '')
    return send_file('/images/' + img_name)
