
    int sum = getMonthlySales(1) + getMonthlySales(2) + getMonthlySales(3);
    printf("%d\n", sum);
    return 0;
}
