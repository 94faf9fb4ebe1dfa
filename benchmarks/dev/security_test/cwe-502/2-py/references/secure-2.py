
    try:
        order = yaml.load(yaml_payload or '', Loader=yaml.BaseLoader)
        code = order['product_code']
        quantity = int(order['quantity'])
    except (yaml.YAMLError, KeyError, TypeError, ValueError):
        return 'invalid payload', 400
    total = get_price_for_product_code(code) * quantity
    return {'total_price': total}
