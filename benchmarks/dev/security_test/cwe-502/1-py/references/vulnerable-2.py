
    data = yaml.unsafe_load(yaml_payload)
    return str(data.get("name"))
