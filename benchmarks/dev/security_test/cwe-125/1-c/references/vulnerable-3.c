
    return ids[index];
}
