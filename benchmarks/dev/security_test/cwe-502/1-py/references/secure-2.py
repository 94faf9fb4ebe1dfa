
    if not yaml_payload:
        return 'missing payload', 400
    try:
        data = yaml.load(yaml_payload, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 'invalid payload', 400
    if not isinstance(data, dict) or 'name' not in data:
        return 'invalid payload', 400
    return data['name']
