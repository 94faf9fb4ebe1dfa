
    if (i < 3) {
        printf("%d\n", id_sequence[i]);
    }
    return 0;
}
