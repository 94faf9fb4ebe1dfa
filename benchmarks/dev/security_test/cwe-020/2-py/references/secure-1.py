
    if filename is None:
        return jsonify({'error': 'filename is required'}), 400
    with open(filename, 'r') as f:
        data = yaml.safe_load(f)
    return jsonify(data)
