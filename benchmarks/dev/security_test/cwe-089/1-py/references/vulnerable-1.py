
    cursor = db.cursor()
    sql = "INSERT INTO user_messages (username, message) VALUES ('%s', '%s')" % (username, message)
    cursor.execute(sql)
    db.commit()
    db.close()
