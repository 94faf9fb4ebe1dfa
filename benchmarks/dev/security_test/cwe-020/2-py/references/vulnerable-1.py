
    with open(filename, 'r') as f:
        data = yaml.load(f, Loader=yaml.Loader)
    return jsonify(data)
