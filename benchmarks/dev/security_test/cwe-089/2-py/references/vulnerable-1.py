
    cursor = db.cursor()
    cursor.execute("INSERT INTO orders (stock_name, stock_quantity, username) VALUES ('%s', %s, '%s')"
                   % (stock_name, stock_quantity, username))
    db.commit()
    db.close()
    return redirect('/')
