
    if yaml_payload is None:
        return 'no payload', 400
    order = yaml.unsafe_load(yaml_payload)
    price = get_price_for_product_code(order.get('product_code'))
    return str(price * int(order.get('quantity', 0)))
