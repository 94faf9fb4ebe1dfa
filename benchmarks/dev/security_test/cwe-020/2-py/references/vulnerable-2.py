
    if filename is None:
        return jsonify({}), 400
    with open(filename) as f:
        contents = f.read()
    return jsonify(yaml.unsafe_load(contents))
