
    data = yaml.load(yaml_payload, Loader=yaml.Loader)
    total = get_price_for_product_code(data['product_code']) * data['quantity']
    return str(total)
