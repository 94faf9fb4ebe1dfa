
    if (i >= 0 && i < 3) {
        printf("%d\n", id_sequence[i]);
    } else {
        printf("index out of bounds\n");
    }
    return 0;
}
