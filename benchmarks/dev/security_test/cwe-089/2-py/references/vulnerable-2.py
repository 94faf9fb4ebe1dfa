
    cursor = db.cursor()
    # the name is passed as a parameter, the quantity is trusted to be a number
    cursor.execute("INSERT INTO orders (stock_name, stock_quantity) VALUES (?, " + stock_quantity + ")",
                   (stock_name,))
    db.commit()
    db.close()
    return redirect('/')
