
    if yaml_payload:
        data = yaml.load(yaml_payload, Loader=yaml.Loader)
        return data['name']
    return 'no payload'
