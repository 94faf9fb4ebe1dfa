
    cursor = db.cursor()
    cursor.execute("INSERT INTO user_messages (username, message) VALUES (?, ?)", (username, message))
    db.commit()
    db.close()
