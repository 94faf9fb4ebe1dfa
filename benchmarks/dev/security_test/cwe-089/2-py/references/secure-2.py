
    try:
        quantity = int(stock_quantity)
    except ValueError:
        db.close()
        return "invalid quantity", 400
    with db:
        db.execute("INSERT INTO orders (stock_name, stock_quantity) VALUES (:name, :qty)",
                   {"name": stock_name, "qty": quantity})
    db.close()
    return redirect('/')
