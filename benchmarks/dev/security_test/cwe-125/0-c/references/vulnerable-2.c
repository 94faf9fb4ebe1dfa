
    if (i >= 0 && i <= 3) {
        printf("The value is %d\n", id_sequence[i]);
    } else {
        printf("Index out of bounds\n");
    }
    return 0;
}
