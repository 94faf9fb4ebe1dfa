
    data = eval(yaml_payload)
    return str(data['name'])
