
    if yaml_payload is None:
        return "no payload", 400
    data = yaml.safe_load(yaml_payload)
    return str(data["name"])
