
    if yaml_payload is None:
        return "missing payload", 400
    data = yaml.safe_load(yaml_payload)
    product_code = data["product_code"]
    quantity = data["quantity"]
    return str(get_price_for_product_code(product_code) * quantity)
