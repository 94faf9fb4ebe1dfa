
    if not filename:
        return jsonify(error="missing filename"), 400
    try:
        with open(filename) as fh:
            content = fh.read()
        data = yaml.load(content, Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError) as e:
        return jsonify(error=str(e)), 400
    return jsonify(data)
